"""Typed keys for what the dashboard app and its requests share."""

from __future__ import annotations

import asyncpg
import jinja2
from aiohttp import web

from pixeltrack.dashboard.accounts import Principal
from pixeltrack.dashboard.config import DashboardConfig
from pixeltrack.dashboard.queries import RecipientCounts
from pixeltrack.dashboard.ratelimit import RateLimiter

CONFIG = web.AppKey("config", DashboardConfig)
POOL = web.AppKey("pool", asyncpg.Pool)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
LOGIN_LIMIT = web.AppKey("login_limit", RateLimiter)
COUNTS = web.AppKey("recipient_counts", RecipientCounts)
PRINCIPAL = web.RequestKey("principal", Principal)  # set by security.authenticate
SESSION_COOKIE = "pt_session"
LOGIN_COOKIE = "pt_login"  # the log-in form's CSRF value (double submit: no session exists yet)

"""Triggers: real-time alerts on settled human events, through an outbox.

Pipeline: ``detect`` finds events among rolled-up hits older than the
hold-back, ``outbox`` writes them and the trigger's watermark in one
transaction, ``dispatch`` claims and sends them (``webhook`` or ``email``)
with retries; ``store`` creates and lists triggers under the mode rules.
"""

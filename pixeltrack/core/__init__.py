"""The core floor: settings, tokens, minting, jobs, websites, database, embedded server, column sets.

Imported by both services and the top floor; it imports neither service.
"""

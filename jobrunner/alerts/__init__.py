"""Alerts: raised once per cause, kept in an outbox, delivered through channels."""

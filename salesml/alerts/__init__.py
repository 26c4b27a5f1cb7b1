"""Alerts: rules evaluated at as_of, their open/resolved lifecycle and notice delivery."""

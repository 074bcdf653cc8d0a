"""Collaborative inference and request decisions on cached candidate lists."""

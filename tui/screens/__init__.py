"""Screens of the terminal app. Each owns its thread workers; `tui.app` only wires them together."""

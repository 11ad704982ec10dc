"""The lorag gateway and its command line."""

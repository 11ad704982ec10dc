"""Adapters: the demo model kit, the LoRA fine-tuning kit and (later) the adapter registry."""

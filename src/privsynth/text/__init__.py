"""Private synthetic text: local models, Private Evolution, DP fine-tuning, filters."""

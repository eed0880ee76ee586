"""Built-in tasks, one module each, found by ``registry.load_tasks``; each registers itself as a plugin would."""

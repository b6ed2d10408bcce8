"""Where attributed records go."""

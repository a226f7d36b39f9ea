"""Small helpers with no knowledge of nginx or registries."""

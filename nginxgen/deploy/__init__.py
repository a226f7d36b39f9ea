"""Put a verified config into service: the nginx binary (nginx_bin.py), reloading its
master (reload.py), confirming the generation it serves (confirm.py), and the install
step that does all three or rolls back (install.py)."""

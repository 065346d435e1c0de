"""Code that runs in the pool's forked children (zygote, compile, replay); imports only plan, state and its protocol."""

"""Scripts that run inside OBS Studio (standard library only); packaged so installs can find them."""

"""The local platform: real services as processes on 127.0.0.1, no containers."""

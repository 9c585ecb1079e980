"""Load tests (Locust, always as a subprocess) and the serving benchmark.

Nothing here imports locust: `locustfile.py` is only ever loaded by the `locust`
command in a child process (importing locust monkey-patches the process with gevent).
"""

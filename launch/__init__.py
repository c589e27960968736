"""The ``rlft`` command line: local runs on an embedded Ray, Ray Jobs submission, config loading."""

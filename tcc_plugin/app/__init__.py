"""The application layer: the embedded local engine, ``tcc demo``, ``tcc report`` and the CLI.

It sits beside the core and may import integrations; the core never imports it.
"""

"""The operator's commands (``imapjmap accounts``, ``sync``, ``cache prune|reset``).

Each runs in a process of its own beside the proxy, from the same configuration file: it
reads the cache directly (:mod:`~imapjmap.admin.accounts`), writes it only while no proxy
answers at the configured address (:mod:`~imapjmap.admin.cache`), or asks the running proxy
over HTTP to do the work (:mod:`~imapjmap.admin.fill`).  ``imapjmap.cli`` imports these
modules only when their command runs.
"""

"""Pure cores of querying: Email/query's filters and sorts validated, planned and
evaluated, without I/O."""

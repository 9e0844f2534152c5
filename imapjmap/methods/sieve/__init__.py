"""VacationResponse (RFC 8621 §8) and SieveScript (RFC 9661): the account's Sieve scripts,
kept on its ManageSieve server."""

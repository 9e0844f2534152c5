"""ManageSieve (RFC 5804): the pure protocol core and the one asyncio client over it."""

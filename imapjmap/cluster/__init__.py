"""Several instances on one cache: who syncs, who watches, who delivers, and push between them."""

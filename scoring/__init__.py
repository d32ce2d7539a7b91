"""Regional CT severity scores and the statistics built on them."""

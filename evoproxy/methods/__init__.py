"""Ways to judge or allocate bit-widths other than evolved genomes: the handcrafted proxies
(handcrafted.py), and later the competing allocators (SMPQ, SEAM, AdaQAT)."""

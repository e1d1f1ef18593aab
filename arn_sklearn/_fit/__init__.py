"""Drivers: one plain function per way of fitting (closed form, learned, Dask...)."""

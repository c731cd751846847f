"""Self-contained HTML reports of ``kvqe score`` runs and bundles (``kvqe report``)."""

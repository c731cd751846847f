"""The ``kvqe`` commands, one module per command or pair of related commands; ``kvqe.cli`` groups them."""

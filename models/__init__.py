"""The model zoo: the registry, model cards, architectures, weight importers and the FLOP counter, used by
export and training. Importing this package registers nothing; :mod:`kvqe.models.registry` imports the
architecture modules listed in its ``ZOO`` the first time a model is looked up."""

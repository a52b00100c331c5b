"""Network architectures the service can host, each split into a feature extractor and a
final linear layer (see ``base.ImageClassifier``)."""

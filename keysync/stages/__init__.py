"""The pipeline stages: reader -> normalizer -> merger -> reporter / provisioner."""

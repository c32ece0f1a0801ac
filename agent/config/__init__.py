"""config.yaml: the root schema, the rules' schema, loading with environment overrides,
the checks that span sections, and what `floorgate check-config` prints."""

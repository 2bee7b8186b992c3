"""The core every stage stands on: data contracts (schema), storage, run layout, locks, image
reading, masks, configuration loading and the one error base. Imports nothing above it."""

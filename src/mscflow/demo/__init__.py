"""The embedded demo: a seeded simulation of mouse lung and liver after MSC infusion,
with its truth."""

"""Pure planning: registry, launch args, shapes, M lists, targets, sharding, estimates, scheduling arithmetic."""

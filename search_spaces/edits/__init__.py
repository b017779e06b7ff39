"""Architecture edits on (ArchSpec, state_dict): NASH morphisms, ResBuilder's insert/remove/width step.

Submodules: `morphism_ops` (spec level, no torch: tuners import it), `morphisms` (the weights),
`resbuilder`, `width_groups`, `state_dicts` (the surgery they share). Import the submodule you need.
"""

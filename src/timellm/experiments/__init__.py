"""The reproduction harness on top of the library: presets, run folders, the paper's protocols,
ablations, explanations, reports and the speed benchmark."""

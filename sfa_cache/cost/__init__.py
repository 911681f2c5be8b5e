"""What training costs: the three regimes compared (baseline, the paper's Stage 2, cached Stage 2),
a memory model of each, and the frame-count planner behind `sfa-cache plan`."""

"""torch trainers: losses and advantages (a registry), the RL step, iGRPO, SFT. No Prefect here."""

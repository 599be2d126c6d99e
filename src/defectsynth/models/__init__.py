"""Networks, losses and the LightningModules that train them."""

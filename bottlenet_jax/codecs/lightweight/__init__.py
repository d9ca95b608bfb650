"""The lightweight codec: `quantizer` (numpy only: the clip model, uniform and ECSQ quantisers, the
range coding of their symbols) and `codec` (the codec contract around it)."""

"""The cloud side's payload check: one request's framed payload -> features, or a PayloadError.

`PayloadDecoder` owns the export's codec and its state: each payload is checked and decoded on its
own (`decode_one`), so a bad one fails only its request; its header is checked against the export's
feature shape before anything is decoded (`Codec.check_payload`), so no payload can make the server
allocate or compute more than that shape needs.
"""

from __future__ import annotations

import numpy as np

from bottlenet_jax.serve.protocol import CRC_BYTES, PayloadError, unframe


class PayloadDecoder:
    """The export's codec and feature shape: `decode_one(element)` -> features, or PayloadError."""

    def __init__(self, export_dir: str):
        from bottlenet_jax.export import load_codec, load_manifest

        self.manifest = manifest = load_manifest(export_dir)
        self.codec, self.state = load_codec(export_dir)
        self.feature_shape = tuple(manifest["feature_shape"])
        # The largest payload a sample can need: raw float32 features plus headers; more is not ours.
        self.max_payload = 4 * int(np.prod(self.feature_shape)) + 4096

    def decode_one(self, element: bytes) -> np.ndarray:
        """A framed payload -> float32 features [h, w, c], or PayloadError naming what is wrong."""
        if len(element) > self.max_payload + CRC_BYTES:
            raise PayloadError(
                f"payload of {len(element)} bytes: larger than any {self.manifest['codec']['name']} "
                f"payload for features {list(self.feature_shape)} ({self.max_payload} bytes)"
            )
        body = unframe(element)
        try:
            self.codec.check_payload(body, self.feature_shape, state=self.state)  # O(header): before any decoding
        except ValueError as e:
            raise PayloadError(
                f"payload of {len(element)} bytes: not a {self.manifest['codec']['name']} payload for features "
                f"{list(self.feature_shape)}: {e}"
            ) from None
        try:
            z = self.codec.decode([body], (1, *self.feature_shape), state=self.state)
        except Exception as e:  # the codec's own error, one line
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise PayloadError(
                f"payload of {len(element)} bytes: the {self.manifest['codec']['name']} codec cannot "
                f"decode it to features {list(self.feature_shape)}: {why}"
            ) from None
        z = np.asarray(z, np.float32)
        if z.shape != (1, *self.feature_shape) or not np.isfinite(z).all():
            raise PayloadError(
                f"payload of {len(element)} bytes: decodes to {list(z.shape[1:])} "
                f"{'non-finite values' if z.shape[1:] == self.feature_shape else ''}, expected "
                f"{list(self.feature_shape)}"
            )
        return z[0]

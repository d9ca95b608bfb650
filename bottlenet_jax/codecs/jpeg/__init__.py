"""Real JPEG on features: the codec (`codec`: tiling, backends, fitted tables), the stream format and
its byte accounting (`jfif`), the cv2 worker pools (`host`), libjpeg's integer pipeline in XLA
(`xla`), exact scan sizes and libjpeg's per-image optimal tables in XLA (`scan`), and scans under
any Huffman tables, fitted to training images (`huffman`)."""

from bottlenet_jax.codecs.jpeg.codec import JpegCodec

__all__ = ["JpegCodec"]

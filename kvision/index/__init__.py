"""Vector search over embeddings: an index of vectors with stable ids and payloads.

Backends (one interface, :class:`VectorIndex`):

* :class:`FaissIndex`: embedded, the default; ``"exact"``, ``"hnsw"`` or ``"ivf"`` search,
  saved atomically to a folder with the embedding model's contract and the payloads
  (``pip install faiss-cpu``).
* :class:`QdrantIndex`: a Qdrant collection, in-process (``":memory:"`` or a local path) or on a
  server (``"http://host:6333"``) for collections that outgrow one machine
  (``pip install qdrant-client``).

::

    index = FaissIndex(dim=128, kind="hnsw", contract=contract.to_dict())
    index.add(embeddings, payloads=image_paths)
    index.save("runs/index")                       # atomic
    index = load_index("runs/index", dim=128)
    scores, ids = index.search(query_embeddings, k=10)
    paths = index.payloads(ids[0])

Importing this package imports neither FAISS nor Qdrant: a backend imports its package when an
index is built or loaded.
"""

from kvision.index.faiss_index import FaissIndex
from kvision.index.qdrant_index import QdrantIndex
from kvision.index.recall import recall_at_k
from kvision.index.store import load_index, read_meta, rebuild_index
from kvision.index.vector_index import METRICS, VectorIndex

__all__ = [
    "METRICS",
    "FaissIndex",
    "QdrantIndex",
    "VectorIndex",
    "load_index",
    "read_meta",
    "rebuild_index",
    "recall_at_k",
]

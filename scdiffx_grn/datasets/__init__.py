"""Data: the embedded demo data, shared paired data sets, reference networks, manifests.

Paired data
    :func:`mouse_mop` (embedded default), :func:`bmmc` (embedded human fixture),
    :func:`load_shared` (any set of :data:`SHARED_MULTIOME`), :func:`read_multiome`
    (.h5mu, two .h5ad, 10x .h5 or mtx directory), :func:`make_mudata`,
    :func:`mouse_mop_links`.
Reference networks (decoupler-style ``source, target, weight``)
    :func:`collectri`, :func:`dorothea`, :func:`trrust`, :func:`omnipath`,
    :func:`chip_targets`; the one TF list :func:`tf_list`; annotation :func:`tss_annotation`.
Toy data with planted truth
    :func:`toy_multiome`; :func:`simulate_multiome` (10x-shaped, real symbols and TSSs, planted links)
    and :func:`write_10x_h5` (Cell Ranger ARC ``filtered_feature_bc_matrix.h5``).
Manifests and files
    :func:`manifest`, :func:`list_manifests`, :func:`data_path`, :func:`shared_data_dir`,
    :func:`vendored_data_dir`, :func:`manifest_dir`, :func:`sha256sum`, :func:`verify_file`.
"""

from ._loaders import SHARED_MULTIOME, bmmc, load_shared, mouse_mop, mouse_mop_links
from ._manifest import (
    data_path,
    list_manifests,
    manifest,
    manifest_dir,
    sha256sum,
    shared_data_dir,
    vendored_data_dir,
    verify_file,
)
from ._readers import make_mudata, read_multiome
from ._refdb import chip_targets, collectri, dorothea, omnipath, trrust, tss_annotation
from ._tfs import tf_list
from ._simulate import simulate_multiome, write_10x_h5
from ._toy import toy_multiome

__all__ = [
    "mouse_mop",
    "mouse_mop_links",
    "bmmc",
    "load_shared",
    "SHARED_MULTIOME",
    "read_multiome",
    "make_mudata",
    "collectri",
    "tf_list",
    "toy_multiome",
    "simulate_multiome",
    "write_10x_h5",
    "dorothea",
    "trrust",
    "omnipath",
    "chip_targets",
    "tss_annotation",
    "manifest",
    "list_manifests",
    "data_path",
    "shared_data_dir",
    "vendored_data_dir",
    "manifest_dir",
    "sha256sum",
    "verify_file",
]

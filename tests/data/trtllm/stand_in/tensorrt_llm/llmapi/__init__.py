"""Stand-in for tensorrt_llm.llmapi (tests only; not TensorRT-LLM): KvCacheConfig keeps its keywords."""


class KvCacheConfig:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)

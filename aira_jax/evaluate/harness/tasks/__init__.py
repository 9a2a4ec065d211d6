"""Built-in tasks; importing this package registers them."""
from aira_jax.evaluate.harness.tasks import arc, boolq, hellaswag, lambada, openbookqa, piqa, siqa, wikitext, winogrande

__all__ = ['arc', 'boolq', 'hellaswag', 'lambada', 'openbookqa', 'piqa', 'siqa', 'wikitext', 'winogrande']

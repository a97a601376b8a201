from . import cardiac_udc  # noqa: F401  (registers cardiac_udc_* and echo_synth_* names, lazily)
from . import echonet_dynamic  # noqa: F401  (registers echonet_dynamic_{train,val,test}, lazily)

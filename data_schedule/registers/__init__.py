from . import cardiac_udc  # noqa: F401  (registers cardiac_udc_* and echo_synth_* names, lazily)
from . import camus  # noqa: F401  (registers camus_* names, lazily)
from . import echonet_dynamic  # noqa: F401  (registers echonet_dynamic_{train,val,test}, lazily)
from . import sunseg  # noqa: F401  (registers sunseg_train and sunseg_{easy,hard}_{seen,unseen}_test, lazily)

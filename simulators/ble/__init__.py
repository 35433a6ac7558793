"""Virtual BLE health devices on Google's Bumble, and a bleak backend on a Bumble central.

``link`` (virtual radios: in-process or HCI over TCP), ``peripherals`` (GATT servers for every
SIG health service, with a working RACP), ``encode`` (characteristic values), ``backend`` (the
bleak backend), ``fleet`` (devices driven by the simulators' physiology) and ``cli``
(``vitalwire simulate --ble``). See ``docs/ble.md``.
"""

__all__: list[str] = []

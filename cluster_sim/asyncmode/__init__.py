"""The asynchronous execution model (after Magalhães, Hines, Sterling, Schürmann 2020): each
neuron integrates on its own time line with variable-order variable-step BDF, limited only by
what its presynaptic sources have promised; ranks exchange spikes and time promises point to
point, with no global barrier. ``bdf`` is the numerical kernel, ``local`` the rank's view of the
network, ``engine`` the scheduler, ``p2p`` the messages, ``run`` the driver."""

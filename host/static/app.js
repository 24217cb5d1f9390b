// Demo page script.

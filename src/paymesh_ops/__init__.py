"""The top floor: the operator CLI (`paymesh`) and the list of the mesh's services. It may
import every service and the kit; nothing imports it."""

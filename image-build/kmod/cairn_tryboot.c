// SPDX-License-Identifier: GPL-2.0-only
/*
 * cairn_tryboot: sets the Raspberry Pi firmware's one-shot "tryboot" flag on
 * restart, for Cairn OS's A/B OS updates (autoboot.txt, tryboot_a_b=1).
 * The Raspberry Pi downstream kernel does this from its firmware driver for
 * `reboot '0 tryboot'`; Debian's kernels do not carry that patch, and the
 * upstream reboot-mode series is not merged, so Cairn OS ships this module.
 * Arm it (/sys/module/cairn_tryboot/parameters/armed, or armed=1 at load)
 * just before rebooting into the other slot.
 *
 * This file is GPL-2.0-only (it uses the GPL-only firmware interface); the
 * rest of the Cairn project is Apache-2.0.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/notifier.h>
#include <linux/of.h>
#include <linux/reboot.h>
#include <soc/bcm2835/raspberrypi-firmware.h>

/*
 * The tags of the downstream header; named locally because upstream's enum
 * may gain RPI_FIRMWARE_{GET,SET}_REBOOT_FLAGS (the reboot-mode series).
 */
#define CAIRN_GET_REBOOT_FLAGS	0x00030064
#define CAIRN_SET_REBOOT_FLAGS	0x00038064
#define CAIRN_REBOOT_TRYBOOT	BIT(0)

static bool armed;
module_param(armed, bool, 0600);
MODULE_PARM_DESC(armed, "set the tryboot flag on the next restart");

/*
 * The flags the firmware reported at load. Informational only: on Pi 4
 * firmware a trial boot started by tryboot reports bit 0 set, but the
 * OS update logic must not depend on it.
 */
static unsigned int boot_flags;
module_param(boot_flags, uint, 0444);
MODULE_PARM_DESC(boot_flags, "reboot flags reported by the firmware at load (informational)");

static struct rpi_firmware *fw;

/*
 * One u32 tag through rpi_firmware_property_list() rather than
 * rpi_firmware_property(): only the tag header shows whether the firmware
 * answered the tag (bit 31 of req_resp_size); firmware that does not know a
 * tag still reports the whole request as successful.
 */
static int cairn_fw_u32(u32 tag, u32 *val)
{
	struct {
		struct rpi_firmware_property_tag_header hdr;
		u32 val;
	} __packed msg = {
		.hdr = { .tag = tag, .buf_size = sizeof(u32) },
		.val = *val,
	};
	int ret;

	ret = rpi_firmware_property_list(fw, &msg, sizeof(msg));
	if (ret)
		return ret;
	if (!(msg.hdr.req_resp_size & RPI_FIRMWARE_STATUS_SUCCESS))
		return -EOPNOTSUPP;
	*val = msg.val;
	return 0;
}

static int cairn_tryboot_notify(struct notifier_block *nb,
				unsigned long action, void *cmd)
{
	u32 flags = CAIRN_REBOOT_TRYBOOT;
	int ret;

	/* the flag only means something to the next boot of this board */
	if (action != SYS_RESTART || !READ_ONCE(armed))
		return NOTIFY_DONE;

	ret = cairn_fw_u32(CAIRN_SET_REBOOT_FLAGS, &flags);
	if (ret)
		pr_err("setting the tryboot flag failed (%d): the board boots its default slot\n",
		       ret);
	else
		pr_info("tryboot flag set: the next boot is a trial boot\n");
	return NOTIFY_DONE;
}

static struct notifier_block cairn_tryboot_nb = {
	.notifier_call = cairn_tryboot_notify,
};

static int __init cairn_tryboot_init(void)
{
	struct device_node *np;
	u32 flags = 0;
	int ret;

	np = of_find_compatible_node(NULL, NULL, "raspberrypi,bcm2835-firmware");
	if (!np) {
		pr_info("no Raspberry Pi firmware node: not a Raspberry Pi\n");
		return -ENODEV;
	}
	fw = rpi_firmware_get(np);
	of_node_put(np);
	/*
	 * NULL while the firmware driver has not probed (yet). A driver would
	 * return -EPROBE_DEFER; a module loaded by hand is not retried, so say
	 * so and let whoever loads it try again.
	 */
	if (!fw) {
		pr_info("Raspberry Pi firmware driver not ready\n");
		return -ENODEV;
	}

	/* -EINVAL: the firmware rejected the whole request */
	ret = cairn_fw_u32(CAIRN_GET_REBOOT_FLAGS, &flags);
	if (ret == -EOPNOTSUPP || ret == -EINVAL) {
		pr_info("firmware too old for tryboot (no reboot flags)\n");
		ret = -EOPNOTSUPP;
		goto err_put;
	}
	if (ret) {
		pr_err("reading the reboot flags failed (%d)\n", ret);
		goto err_put;
	}
	boot_flags = flags;

	ret = register_reboot_notifier(&cairn_tryboot_nb);
	if (ret)
		goto err_put;

	pr_info("ready (boot flags 0x%x%s)\n", boot_flags,
		READ_ONCE(armed) ? ", armed" : "");
	return 0;

err_put:
	rpi_firmware_put(fw);
	return ret;
}

static void __exit cairn_tryboot_exit(void)
{
	unregister_reboot_notifier(&cairn_tryboot_nb);
	rpi_firmware_put(fw);
}

module_init(cairn_tryboot_init);
module_exit(cairn_tryboot_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Set the Raspberry Pi firmware's tryboot flag on restart");
MODULE_AUTHOR("Cairn");
